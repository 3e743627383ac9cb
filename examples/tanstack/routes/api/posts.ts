import { createAPIFileRoute } from '@tanstack/react-start/api'
import { sql } from 'edgehost'

// Posts live in the `main` SQL database (table `posts`, made by
// migrations/main): each one the JSON object it was created with, its `id`
// and `createdAt` added.
export const APIRoute = createAPIFileRoute('/api/posts')({
  GET: async () => {
    const rows = await sql('main').query<{ body: string }>(
      'SELECT body FROM posts ORDER BY created_at, id',
    )
    return Response.json(rows.map((row) => JSON.parse(row.body)))
  },

  POST: async ({ request }) => {
    const body = await request.json()
    if (body === null || typeof body !== 'object' || Array.isArray(body)) {
      return Response.json({ error: 'A post must be a JSON object' }, { status: 400 })
    }
    const id = [...crypto.getRandomValues(new Uint8Array(8))]
      .map((b) => b.toString(16).padStart(2, '0'))
      .join('')
    const post = { ...body, id, createdAt: Date.now() }
    await sql('main').execute('INSERT INTO posts (id, created_at, body) VALUES ($1, $2, $3)', [
      id,
      post.createdAt,
      JSON.stringify(post),
    ])
    return Response.json(post, { status: 201, headers: { Location: `/api/posts/${id}` } })
  },
})
