import { createAPIFileRoute } from '@tanstack/react-start/api'

// process.env holds the route's env values and the secrets it is granted.
export const APIRoute = createAPIFileRoute('/api/env')({
  GET: () =>
    Response.json({
      greeting: process.env.GREETING ?? null,
      granted: process.env.GRANTED_SECRET ?? null,
      ungranted: process.env.OTHER_SECRET === undefined ? 'undefined' : process.env.OTHER_SECRET,
      names: Object.keys(process.env).sort(),
    }),
})
