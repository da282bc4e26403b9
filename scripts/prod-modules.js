#!/usr/bin/env node
// Which node_modules entries the given workspaces need at run time, read from package-lock.json
// (lockfile v2/v3): the closure of their dependencies, optionalDependencies and
// peerDependencies, each resolved the way require() resolves it (the nearest node_modules
// walking up from the requiring package). Dev dependencies are never followed, so the answer
// does not depend on npm's "dev" flags or on what else happens to be installed.
//
//   node scripts/prod-modules.js ROOT packages/steved [packages/...]
//
// prints one line per entry, sorted:
//   workspace packages/jobclient
//   module node_modules/commander
//   link node_modules/jobclient packages/jobclient
// Used by scripts/release.sh (what goes into the node_modules tarball) and scripts/install.sh
// (what gets installed). Exit 1 with a message when a needed package is missing from the lock.
'use strict'
const fs = require('node:fs')
const path = require('node:path')

function fail(msg) {
  process.stderr.write(`prod-modules: ${msg}\n`)
  process.exit(1)
}

const [root, ...workspaces] = process.argv.slice(2)
if (!root || workspaces.length === 0) fail('usage: prod-modules.js ROOT WORKSPACE_DIR...')
let lock
try {
  lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8'))
} catch (e) {
  fail(`cannot read ${path.join(root, 'package-lock.json')}: ${e.message}`)
}
const pkgs = lock.packages
if (!pkgs) fail('package-lock.json has no "packages" map (lockfile v2 or later is needed)')

/** Node's lookup: FROM/node_modules/NAME, then each ancestor's, skipping node_modules dirs. */
function resolve(from, name) {
  const segs = from === '' ? [] : from.split('/')
  for (let i = segs.length; i >= 0; i--) {
    if (i > 0 && segs[i - 1] === 'node_modules') continue
    const cand = [...segs.slice(0, i), 'node_modules', name].join('/')
    if (pkgs[cand]) return cand
  }
  return null
}

const out = new Set()
const seen = new Set()
const queue = []
for (const ws of workspaces) {
  const key = ws.replace(/\/+$/, '')
  if (!pkgs[key]) fail(`${key} is not a workspace in package-lock.json`)
  queue.push(key)
}
while (queue.length) {
  const key = queue.shift()
  if (seen.has(key)) continue
  seen.add(key)
  const entry = pkgs[key]
  out.add(key.startsWith('node_modules/') || key.includes('/node_modules/') ? `module ${key}` : `workspace ${key}`)
  const optionalPeers = entry.peerDependenciesMeta ?? {}
  const wanted = [
    ...Object.keys(entry.dependencies ?? {}).map((n) => [n, false]),
    ...Object.keys(entry.optionalDependencies ?? {}).map((n) => [n, true]),
    ...Object.keys(entry.peerDependencies ?? {}).map((n) => [n, Boolean(optionalPeers[n]?.optional)]),
  ]
  for (const [name, optional] of wanted) {
    const at = resolve(key, name)
    if (at === null) {
      if (optional) continue
      fail(`${key} needs ${name}, which package-lock.json does not have (run npm install)`)
    }
    const dep = pkgs[at]
    if (dep.link) {
      out.add(`link ${at} ${dep.resolved}`)
      queue.push(dep.resolved)
    } else {
      queue.push(at)
    }
  }
}
process.stdout.write([...out].sort().join('\n') + '\n')
