import { createAPIFileRoute } from '@tanstack/react-start/api'

// console output goes to the host's log, tagged with the route and request.
export const APIRoute = createAPIFileRoute('/api/log')({
  GET: ({ request }) => {
    console.log(`ts-log-marker ${new URL(request.url).searchParams.get('n')}`)
    console.error('ts-error-marker')
    return new Response('logged')
  },
})
