import { createFileRoute } from '@tanstack/react-router'

// The third form: a file route with server handlers.
export const Route = createFileRoute('/api/forms/file')({
  server: {
    handlers: {
      GET: () => Response.json({ form: 'file' }),
      PUT: async ({ request }) => new Response(await request.text(), { status: 200 }),
    },
  },
})
