import { createAPIFileRoute } from '@tanstack/react-start/api'
import { kv } from 'edgehost'

// A view counter on a key-value store (atomic increments).
export const APIRoute = createAPIFileRoute('/api/views/$postId')({
  GET: async ({ params }) => {
    const views = Number((await kv('views').get(params.postId)) ?? 0)
    return Response.json({ postId: params.postId, views })
  },

  POST: async ({ params }) => {
    const views = await kv('views').increment(params.postId)
    return Response.json({ postId: params.postId, views })
  },
})
