// Drives Xen Orchestra's `xen-api` npm package against xapid, the way
// XO itself uses it: connect (2-argument login), initial fetch of every
// object, then follow event.from.  Prints one JSON object per line on
// stdout; the Python test reads them and answers on stdin.
//
// usage: node xo-client.mjs URL PASSWORD TRANSPORT
//   env XEN_API_MODULE: absolute path of xen-api's index.mjs
//   TRANSPORT: json-rpc | xml-rpc | auto
import { pathToFileURL } from 'node:url'
import readline from 'node:readline'

const [url, password, transport] = process.argv.slice(2)
const { createClient } = await import(pathToFileURL(process.env.XEN_API_MODULE).href)

const out = obj => process.stdout.write(JSON.stringify(obj) + '\n')
const warnings = []
console.warn = (...args) => warnings.push(args.map(String).join(' '))

const withTimeout = (p, ms, what) =>
  Promise.race([p, new Promise((_, reject) => setTimeout(() => reject(new Error('timeout: ' + what)), ms))])

const xapi = createClient({
  url,
  auth: { user: 'root', password },
  transport,
  allowUnauthorized: true,
})

try {
  await withTimeout(xapi.connect(), 10000, 'connect')
  out({ event: 'connected', status: xapi.status, sessionId: xapi.sessionId })

  // Direct calls through the chosen transport.
  const refs = await xapi.call('VM.get_all')
  const records = await xapi.call('VM.get_all_records')
  const names = Object.values(records).map(r => r.name_label)
  const memory = await xapi.call('host_metrics.get_memory_total', (await xapi.call('host_metrics.get_all'))[0])
  out({ event: 'listed', n_refs: refs.length, n_records: Object.keys(records).length, names, memoryType: typeof memory })

  // XO's object cache: the initial fetch of every type.
  await withTimeout(xapi.objectsFetched, 10000, 'objectsFetched')
  const cached = xapi.objects.indexes.type?.VM ?? {}
  out({
    event: 'fetched',
    n_cached_vms: Object.keys(cached).length,
    pool_master: xapi.pool.master,
    master_name: xapi.pool.$master?.name_label,
  })

  // Follow events: report every VM change until told which name to wait for.
  let want
  const seen = new Set()
  let resolveSeen
  const sawIt = new Promise(resolve => (resolveSeen = resolve))
  const check = objects => {
    for (const obj of Object.values(objects)) {
      if (obj.$type === 'VM') {
        seen.add(obj.name_label)
        if (want !== undefined && obj.name_label === want) resolveSeen(obj)
      }
    }
  }
  xapi.objects.on('add', check)
  xapi.objects.on('update', check)
  out({ event: 'ready' })

  const rl = readline.createInterface({ input: process.stdin })
  for await (const line of rl) {
    want = line.trim()
    if (seen.has(want)) resolveSeen({ name_label: want })
    break
  }
  const t0 = Date.now()
  const obj = await withTimeout(sawIt, 15000, 'event for ' + want)
  out({ event: 'saw', name_label: obj.name_label, ms: Date.now() - t0 })

  await xapi.disconnect()
  out({ event: 'done', warnings })
  process.exit(0)
} catch (error) {
  out({ event: 'error', message: String(error?.stack ?? error), code: error?.code, params: error?.params, warnings })
  process.exit(1)
}
