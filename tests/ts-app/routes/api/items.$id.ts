import { createAPIFileRoute } from '@tanstack/react-start/api'

// A flat file name: items.$id.ts answers /api/items/$id.
export const APIRoute = createAPIFileRoute('/api/items/$id')({
  GET: ({ params }) => Response.json({ id: params.id }),
})
