import { createServerFileRoute } from '@tanstack/react-start/server'
import { json } from '@tanstack/react-start'

// The second form: a server file route's methods, one through the builder.
export const ServerRoute = createServerFileRoute('/api/forms/server').methods((api) => ({
  GET: () => json({ form: 'server' }),
  POST: api.handler(async ({ request }) => json({ form: 'server', got: await request.json() }, { status: 201 })),
}))
