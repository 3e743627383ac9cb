import { createAPIFileRoute } from '@tanstack/react-start/api'

// Fetches ?url=...: the host lets it reach only the route's listed origins.
export const APIRoute = createAPIFileRoute('/api/fetch')({
  GET: async ({ request }) => {
    const url = new URL(request.url).searchParams.get('url') ?? ''
    try {
      const answer = await fetch(url)
      return Response.json({ status: answer.status, body: await answer.text() })
    } catch (err) {
      return Response.json({ refused: String(err) }, { status: 502 })
    }
  },
})
