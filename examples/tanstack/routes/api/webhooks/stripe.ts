import { createAPIFileRoute } from '@tanstack/react-start/api'

// Stripe's scheme: `stripe-signature: t=<unix s>,v1=<hex HMAC-SHA256 of
// "<t>.<body>">`, keyed by the endpoint secret as written (`whsec_...`),
// at most 300 s old.
const TOLERANCE_SECS = 300

async function expectedSignature(payload: string, secret: string): Promise<string> {
  const encoder = new TextEncoder()
  const key = await crypto.subtle.importKey(
    'raw',
    encoder.encode(secret),
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign'],
  )
  const mac = await crypto.subtle.sign('HMAC', key, encoder.encode(payload))
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, '0')).join('')
}

function equal(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let difference = 0
  for (let i = 0; i < a.length; i++) difference |= a.charCodeAt(i) ^ b.charCodeAt(i)
  return difference === 0
}

async function verify(body: string, header: string, secret: string): Promise<string | null> {
  let timestamp: number | undefined
  const signatures: string[] = []
  for (const item of header.split(',')) {
    const [key, value] = item.trim().split('=', 2)
    if (key === 't' && /^\d+$/.test(value ?? '')) timestamp = Number(value)
    if (key === 'v1' && value) signatures.push(value)
  }
  if (timestamp === undefined) return 'unable to extract timestamp and signatures from header'
  if (signatures.length === 0) return 'no signatures found with expected scheme'
  const expected = await expectedSignature(`${timestamp}.${body}`, secret)
  if (!signatures.some((candidate) => equal(candidate, expected))) {
    return 'no signature matches the payload'
  }
  const age = Math.floor(Date.now() / 1000) - timestamp
  if (age > TOLERANCE_SECS) return `timestamp is ${age} s old, outside the tolerance`
  return null
}

export const APIRoute = createAPIFileRoute('/api/webhooks/stripe')({
  POST: async ({ request }) => {
    const body = await request.text()
    const signature = request.headers.get('stripe-signature')
    if (!signature) {
      return Response.json({ error: 'Missing signature' }, { status: 400 })
    }
    const secret = process.env.STRIPE_WEBHOOK_SECRET
    if (!secret) {
      throw new Error('STRIPE_WEBHOOK_SECRET is not granted to this route')
    }
    const problem = await verify(body, signature, secret)
    if (problem) {
      console.error(`rejected stripe webhook: ${problem}`)
      return Response.json({ error: 'Invalid signature' }, { status: 400 })
    }
    let type: string | undefined
    try {
      type = JSON.parse(body).type
    } catch {
      type = undefined
    }
    console.log(`verified stripe event of type ${JSON.stringify(type ?? null)}`)
    return Response.json({ received: true })
  },
})
