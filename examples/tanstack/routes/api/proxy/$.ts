import { createAPIFileRoute } from '@tanstack/react-start/api'

// Outbound HTTP: this route may reach only the origins the manifest lists.
export const APIRoute = createAPIFileRoute('/api/proxy/$')({
  GET: async ({ request, params }) => {
    const upstream = process.env.UPSTREAM_URL
    if (!upstream) throw new Error('UPSTREAM_URL is not set for this route')
    const query = new URL(request.url).search
    const url = `${upstream.replace(/\/$/, '')}/${params._splat}${query}`
    const accept = request.headers.get('accept')
    const answer = await fetch(url, { headers: accept ? { accept } : {} })
    const headers: Record<string, string> = { 'x-upstream-url': url }
    const type = answer.headers.get('content-type')
    if (type) headers['content-type'] = type
    return new Response(await answer.arrayBuffer(), { status: answer.status, headers })
  },
})
