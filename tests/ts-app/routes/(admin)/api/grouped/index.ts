import { createAPIFileRoute } from '@tanstack/react-start/api'

// A (group) folder adds nothing to the URL; index is its folder's path.
export const APIRoute = createAPIFileRoute('/api/grouped')({
  GET: () => Response.json({ grouped: true }),
})
