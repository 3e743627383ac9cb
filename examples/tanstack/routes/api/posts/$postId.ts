import { createAPIFileRoute } from '@tanstack/react-start/api'
import { sql } from 'edgehost'

export const APIRoute = createAPIFileRoute('/api/posts/$postId')({
  GET: async ({ params }) => {
    const [post] = await sql('main').query<{ body: string }>(
      'SELECT body FROM posts WHERE id = $1',
      [params.postId],
    )
    if (!post) {
      return Response.json({ error: 'Not found' }, { status: 404 })
    }
    return Response.json(JSON.parse(post.body))
  },

  DELETE: async ({ params }) => {
    const deleted = await sql('main').execute('DELETE FROM posts WHERE id = $1', [params.postId])
    if (deleted === 0) {
      return Response.json({ error: 'Not found' }, { status: 404 })
    }
    return new Response(null, { status: 204 })
  },
})
