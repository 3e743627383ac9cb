import { createAPIFileRoute } from '@tanstack/react-start/api'

// Granted nothing, though it shares its component with /api/env.
export const APIRoute = createAPIFileRoute('/api/bare')({
  GET: () =>
    Response.json({
      names: Object.keys(process.env).sort(),
      granted: process.env.GRANTED_SECRET ?? null,
    }),
})
