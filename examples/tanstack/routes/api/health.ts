import { createAPIFileRoute } from '@tanstack/react-start/api'

export const APIRoute = createAPIFileRoute('/api/health')({
  GET: async () => {
    return Response.json({ status: 'ok', timestamp: Date.now() })
  },
})
