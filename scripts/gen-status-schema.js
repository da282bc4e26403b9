#!/usr/bin/env node
// Writes packages/steved/status.schema.json from jobclient's STATUS_SCHEMA, the one description
// the Status type is made from too (build jobclient first). With --check it only says whether
// the committed file is current (exit 1 when not).
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const { STATUS_SCHEMA } = require(path.join(__dirname, '..', 'packages', 'jobclient', 'dist', 'index.js'))
const file = path.join(__dirname, '..', 'packages', 'steved', 'status.schema.json')
const text = JSON.stringify(STATUS_SCHEMA, null, 2) + '\n'

if (process.argv.includes('--check')) {
  const current = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : ''
  if (current !== text) {
    process.stderr.write(`${path.relative(process.cwd(), file)} is not what jobclient's STATUS_SCHEMA makes: run node scripts/gen-status-schema.js\n`)
    process.exit(1)
  }
} else {
  fs.writeFileSync(file, text)
}
