import { createAPIFileRoute } from '@tanstack/react-start/api'

// The benchmark's hello route in TypeScript: the same JSON as the native baseline.
export const APIRoute = createAPIFileRoute('/')({
  GET: () => new Response('{"message":"hello"}', { headers: { 'content-type': 'application/json' } }),
})
