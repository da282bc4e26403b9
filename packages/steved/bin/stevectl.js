#!/usr/bin/env node
'use strict'
const { stevectl, CtlError } = require('../dist/stevectl.js')
stevectl(process.argv.slice(2)).then(
  (code) => { process.exitCode = code },
  (e) => {
    if (e instanceof CtlError) {
      process.stderr.write(`stevectl: ${e.message}\n`)
      process.exitCode = e.exitCode
    } else {
      console.error(e)
      process.exitCode = 1
    }
  },
)
