import { createAPIFileRoute } from '@tanstack/react-start/api'

// Never answers: the host stops it at its timeout.
export const APIRoute = createAPIFileRoute('/api/spin')({
  GET: () => {
    let n = 0
    for (;;) n++
  },
})
