// status.schema.json is generated (scripts/gen-status-schema.js) from jobclient's STATUS_SCHEMA,
// the description the Status type is made from: the committed file must be what it makes, and
// the settings part must follow the settings table.

import Ajv from 'ajv'
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'

import { POOL_SETTINGS, STATUS_SCHEMA } from 'jobclient'

const FILE = path.join(__dirname, '..', 'status.schema.json')

t.test('the committed schema is the generated one', async (t) => {
  t.equal(fs.readFileSync(FILE, 'utf8'), JSON.stringify(STATUS_SCHEMA, null, 2) + '\n', 'run node scripts/gen-status-schema.js after changing STATUS_SCHEMA')
})

t.test('settings in the schema: one key per pool setting of the table, with its bounds', async (t) => {
  const settings = (STATUS_SCHEMA.properties as Record<string, { properties: Record<string, unknown>; required: string[] }>).settings
  t.same(settings.required, POOL_SETTINGS.map((d) => d.daemon.status))
  const validate = new Ajv({ strict: false }).compile(STATUS_SCHEMA)
  const doc = JSON.parse(fs.readFileSync(path.join(__dirname, 'fixtures', 'status-v1.json'), 'utf8'))
  t.ok(validate(doc), `a real status document is valid: ${JSON.stringify(validate.errors)}`)
  t.notOk(validate({ ...doc, settings: { ...doc.settings, jobs: 0 } }), 'jobs 0 is refused')
  t.notOk(validate({ ...doc, settings: { ...doc.settings, extra: 1 } }), 'an unknown setting is refused')
  t.notOk(validate({ ...doc, settings: { ...doc.settings, loadAverage: 0 } }), 'a load limit of 0 is refused')
  t.ok(validate({ ...doc, settings: { ...doc.settings, loadAverage: null, perProcessLimit: null } }), 'unset limits are null')
  t.notOk(validate({ ...doc, lastSample: { load1: 1 } }), 'a partial sample is refused')
  t.ok(validate({ ...doc, lastSample: null }), 'no sample is null')
})
