import { createAPIFileRoute } from '@tanstack/react-start/api'

export const APIRoute = createAPIFileRoute('/api/fail')({
  // Any other exception is a 500 that keeps its message out of the answer.
  GET: () => {
    throw new Error('the database password is hunter2')
  },
  // A thrown Response is the answer.
  POST: () => {
    throw new Response('I am a teapot', { status: 418, headers: { 'x-thrown': 'yes' } })
  },
  // A body that is not JSON is the client's mistake: a 400.
  PUT: async ({ request }) => Response.json(await request.json()),
})
