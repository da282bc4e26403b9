#!/usr/bin/env node
'use strict'
require('./proc-name')('steved')
require('../dist/main.js')
  .main(process.argv.slice(2))
  .then((code) => { process.exitCode = code }, (e) => { console.error(e); process.exitCode = 1 })
