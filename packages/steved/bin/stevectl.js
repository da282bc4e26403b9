#!/usr/bin/env node
'use strict'
// Also installed as `stevie` (steve's name for this tool): messages then say stevie.
const path = require('node:path')
const prog = path.basename(require.main.filename, '.js') === 'stevie' ? 'stevie' : 'stevectl'
require('./proc-name')(prog)
const { stevectl, CtlError } = require('../dist/stevectl.js')
stevectl(process.argv.slice(2), undefined, prog).then(
  (code) => { process.exitCode = code },
  (e) => {
    if (e instanceof CtlError) {
      process.stderr.write(`${prog}: ${e.message}\n`)
      process.exitCode = e.exitCode
    } else {
      console.error(e)
      process.exitCode = 1
    }
  },
)
