#!/usr/bin/env node
// `npm pack` / `npm publish` step (prepack): build the addon with prebuildify into
// prebuilds/<platform>-<arch>/jobclient.napi.<libc>.node, which the tarball ships and
// node-gyp-build loads when the user's install finds no build/Release (so no compiler is needed
// on a platform we built for). N-API: one binary serves every Node.js >= 20 of that platform.
//
// node-gyp compiles against the headers of the Node.js running this script when they are
// installed (PREFIX/include/node, e.g. Debian's /usr/include/node), so packing needs no network;
// npm_config_nodedir set by the caller wins.
'use strict'
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const env = { ...process.env }
if (!env.npm_config_nodedir) {
  const prefix = path.dirname(path.dirname(fs.realpathSync(process.execPath)))
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) env.npm_config_nodedir = prefix
}
const bin = require.resolve('prebuildify/bin.js')
const r = spawnSync(process.execPath, [bin, '--napi', '--strip', '--tag-libc', '--name', 'jobclient'], {
  cwd: path.join(__dirname, '..'),
  env,
  stdio: 'inherit',
})
if (r.status !== 0) {
  process.stderr.write(
    'jobclient prebuild: prebuildify failed; it needs python3, make, a C++17 compiler and the Node.js ' +
      'headers (npm_config_nodedir=DIR with DIR/include/node, or network access for node-gyp to fetch them)\n',
  )
  process.exit(r.status ?? 1)
}
