#!/usr/bin/env node
// jobclient-ninja: a drop-in `ninja` that runs the real one under `jobclient fifo --optional`,
// for the places that start ninja by a variable: Gentoo's eninja (NINJA=jobclient-ninja),
// meson (NINJA=jobclient-ninja meson compile), CMake (-DCMAKE_MAKE_PROGRAM=.../jobclient-ninja).
// The real ninja is $JOBCLIENT_NINJA, else the first ninja or ninja-build on PATH that is not
// this script. Without a reachable jobserver it warns and runs ninja as it is.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

try {
  fs.writeFileSync('/proc/self/comm', 'jobclient')
} catch {
  // Not Linux: the name is a convenience.
}

function realNinja() {
  if (process.env.JOBCLIENT_NINJA) return process.env.JOBCLIENT_NINJA
  const self = fs.realpathSync(__filename)
  for (const name of ['ninja', 'ninja-build']) {
    for (const dir of (process.env.PATH || '').split(':')) {
      const p = path.join(dir || '.', name)
      try {
        if (fs.realpathSync(p) === self) continue
        fs.accessSync(p, fs.constants.X_OK)
        return p
      } catch {
        // Not here.
      }
    }
  }
  return undefined
}

const ninja = realNinja()
if (!ninja) {
  process.stderr.write('jobclient-ninja: error: no ninja on PATH (set JOBCLIENT_NINJA=/path/to/ninja)\n')
  process.exitCode = 127
} else {
  require('../dist/cli.js')
    .main(['fifo', '--optional', '--', ninja, ...process.argv.slice(2)])
    .then((status) => {
      process.exitCode = status
    })
}
