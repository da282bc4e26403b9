// steved's status document (what `stevectl status --json` prints, SIGUSR1 renders as prose and
// the metrics are made from): its JSON Schema and its TypeScript type come from the one
// description below, so they cannot drift apart. packages/steved/status.schema.json is written
// from STATUS_SCHEMA by scripts/gen-status-schema.js and a test checks that it is current.
// Bump STATUS_VERSION on any incompatible change.

import { POOL_SETTINGS, SETTINGS } from './steved'

export const STATUS_VERSION = 1

/** A schema fragment that also carries the type of the values it accepts. */
interface Shape<T> {
  readonly schema: Record<string, unknown>
  /** Never set: only there so that T is inferred. */
  readonly _type?: T
}
type TypeOf<S> = S extends Shape<infer T> ? T : never
type Extra = { description?: string; minimum?: number; maximum?: number; exclusiveMinimum?: number; format?: string }

const shape = <T>(schema: Record<string, unknown>): Shape<T> => ({ schema })
const integer = (x: Extra = {}) => shape<number>({ type: 'integer', ...x })
const number = (x: Extra = {}) => shape<number>({ type: 'number', ...x })
const string = (x: Extra = {}) => shape<string>({ type: 'string', ...x })
const constant = <V extends number>(v: V) => shape<V>({ const: v })
const oneOf = <V extends string>(...values: V[]) => shape<V>({ enum: values })
/** The same constraints, with null allowed too. */
const orNull = <T>(s: Shape<T>): Shape<T | null> => {
  const type = s.schema.type
  if (typeof type === 'string') return shape({ ...s.schema, type: [type, 'null'] })
  return shape({ oneOf: [{ type: 'null' }, s.schema] })
}
const array = <T>(items: Shape<T>, x: Extra = {}) => shape<T[]>({ type: 'array', ...x, items: items.schema })
const object = <P extends Record<string, Shape<unknown>>>(props: P, x: Extra = {}) =>
  shape<{ [K in keyof P]: TypeOf<P[K]> }>({
    type: 'object',
    additionalProperties: false,
    required: Object.keys(props),
    ...x,
    properties: Object.fromEntries(Object.entries(props).map(([k, v]) => [k, v.schema])),
  })

const definitions: Record<string, Record<string, unknown>> = {}
/** A named definition, referred to as #/definitions/NAME. */
const define = <T>(name: string, s: Shape<T>): Shape<T> => {
  definitions[name] = s.schema
  return shape({ $ref: `#/definitions/${name}` })
}

const pid = define('pid', integer({ minimum: 0, description: "process id (TGID); 0 = outside steved's pid namespace" }))
const seconds = define('seconds', number({ minimum: 0 }))
const count = () => integer({ minimum: 0 })

/** The pool settings, one key per writable row of the settings table. */
type PoolSetting = Extract<(typeof SETTINGS)[number], { daemon: unknown }>
type StatusSettings = { [D in PoolSetting as D['daemon']['status']]: D['nullable'] extends true ? number | null : number }
const settings = shape<StatusSettings>(
  object(
    Object.fromEntries(
      POOL_SETTINGS.map((d) => {
        // The command line takes any positive decimal for the timeouts, so > 0 is what holds.
        const bounds: Extra = d.integer ? { minimum: d.min, ...(d.max < Number.MAX_VALUE ? { maximum: d.max } : {}) } : d.min > 0 ? { exclusiveMinimum: 0 } : { minimum: 0 }
        const s = d.integer ? integer(bounds) : number(bounds)
        return [d.daemon.status, d.nullable ? orNull(s) : s]
      }),
    ),
  ).schema,
)

const document = object({
  version: constant(STATUS_VERSION),
  time: string({ format: 'date-time' }),
  server: object({
    pid,
    version: string(),
    transport: oneOf('fuse', 'cuse'),
    path: string({ description: 'the path clients open' }),
    startedAt: string({ format: 'date-time' }),
    adminGroup: orNull(integer({ description: 'gid that may change settings besides root' })),
    uptimeSeconds: seconds,
    statusSnapshots: object(
      { count: count(), bytes: count() },
      { description: 'status documents kept while their readers fetch them in chunks (taken before this one)' },
    ),
  }),
  pool: object({
    jobs: integer({ minimum: 1, maximum: SETTINGS[0].max }),
    free: integer({ description: 'negative while a lowered pool drains' }),
    held: integer(),
    reserved: count(),
    waiting: count(),
  }),
  settings,
  lastSample: orNull(
    object({
      load1: number(),
      memAvailMiB: orNull(number()),
      pressure: orNull(
        object(
          { cpu: orNull(number()), memory: orNull(number()), io: orNull(number()) },
          { description: 'PSI some avg10 in %, read only while a pressure limit is set (null: not read)' },
        ),
      ),
      ageSeconds: seconds,
    }),
  ),
  holders: array(
    object({
      pid,
      cmdline: string(),
      tokens: integer({ minimum: 1 }),
      heldForSeconds: array(seconds, { description: 'age of each held token, oldest first' }),
    }),
  ),
  waiters: array(
    object({
      pid,
      cmdline: string(),
      how: oneOf('read', 'poll'),
      waitingForSeconds: seconds,
      reason: oneOf('no-tokens', 'load', 'memory', 'pressure:cpu', 'pressure:memory', 'pressure:io', 'per-process-limit', 'group-limit'),
    }),
    { description: 'in queue order' },
  ),
  reservations: array(object({ pid, cmdline: string(), ageSeconds: seconds, expiresInSeconds: seconds })),
  groups: array(
    object({
      name: string(),
      limit: orNull(integer({ minimum: 1 })),
      owner: integer({ minimum: 0, description: 'uid that created the group (or the admin that last joined it)' }),
      roots: array(pid),
      members: array(pid),
      tokens: count(),
    }),
    { description: 'process trees capped together (per-package caps)' },
  ),
  counters: object({
    granted: count(),
    returned: count(),
    reclaimed: count(),
    enospc: count(),
    interrupts: count(),
    eagain: count(),
    reservationsExpired: count(),
    peakHolders: count(),
    secondsAtZeroFree: seconds,
  }),
})

/** The status document. */
export type Status = TypeOf<typeof document>

/** Its JSON Schema (draft-07). */
export const STATUS_SCHEMA: Record<string, unknown> = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  $id: 'https://steved.invalid/status.schema.json',
  title: `steved status (stevectl status --json), version ${STATUS_VERSION}`,
  ...document.schema,
  definitions,
}
