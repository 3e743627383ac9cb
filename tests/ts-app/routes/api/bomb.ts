import { createAPIFileRoute } from '@tanstack/react-start/api'

// Allocates until something stops it: the host, at the route's memory limit.
export const APIRoute = createAPIFileRoute('/api/bomb')({
  GET: () => {
    const held: Uint8Array[] = []
    for (;;) held.push(new Uint8Array(1 << 20).fill(7))
  },
})
