import { createAPIFileRoute } from '@tanstack/react-start/api'

export const APIRoute = createAPIFileRoute('/api/data')({
  GET: async () => {
    const data = {
      items: [
        { id: 1, name: 'alpha' },
        { id: 2, name: 'beta' },
      ],
    }
    return new Response(JSON.stringify(data), {
      status: 200,
      headers: {
        'Content-Type': 'application/json',
        'Cache-Control': 'public, s-maxage=60',
        'Access-Control-Allow-Origin': '*',
      },
    })
  },
})
