import { createAPIFileRoute } from '@tanstack/react-start/api'

// TanStack Start's first form: handlers by method.
export const APIRoute = createAPIFileRoute('/api/forms/api')({
  GET: async ({ request }) => Response.json({ form: 'api', url: new URL(request.url).pathname }),
})
