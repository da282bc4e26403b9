#!/usr/bin/env node
// The emerge-shim helper. All logic is in dist/cli.js; this file only wires the real process in.
'use strict'
require('../dist/cli.js')
  .main(process.argv.slice(2))
  .then((status) => {
    process.exitCode = status
  })
