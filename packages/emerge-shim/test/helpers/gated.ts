// Two package builds under real emerge, held at a moment when both compile: each make runs
// recipes that wait at a barrier until `barrier` of them have started, then for the gate file.
// The tests then look at who holds what, or kill something, and open the gate.
import * as fs from 'node:fs'
import * as path from 'node:path'
import type { Test } from 'tap'
import { startSteved, tmpDir } from '../../../../test/helpers/steved'
import { makefile, processTag, waitUntil, writeRecipe } from './emerge'
import { makeBed, type PortageVersion } from './portage'

export interface GatedOptions {
  version: PortageVersion
  featuresToken?: boolean
  /** The two packages (app-misc/NAME). */
  names: [string, string]
  /** Recipes per package, how many must have started before any ends, and their length. */
  recipes: number
  barrier: number
  seconds: number
  /** Start emerge with MAKEFLAGS naming the pool in its own environment (as under make or stevie). */
  underMake?: boolean
}

export async function startGatedBuilds(t: Test, o: GatedOptions) {
  const dir = tmpDir(t)
  const steved = await startSteved(t, { jobs: 3, dir })
  const tag = processTag(t)
  const recipe = writeRecipe(dir)
  const log = path.join(dir, 'recipes.log')
  const go = path.join(dir, 'go')
  const barrierDir = path.join(dir, 'barrier')
  fs.mkdirSync(barrierDir)
  const pkgs = o.names.map((name) => ({ name, makefile: makefile({ prefix: name, n: o.recipes, recipe, log, barrier: o.barrier, barrierDir, gate: go, seconds: o.seconds }) }))
  const bed = makeBed({ version: o.version, jobserver: steved, dir, tag, packages: pkgs, featuresToken: o.featuresToken })
  const emerge = bed.emerge(t, ['--jobs=2', ...o.names.map((n) => `app-misc/${n}`)], o.underMake ? { MAKEFLAGS: `--jobserver-auth=fifo:${steved.path}` } : {})
  await waitUntil(() => fs.readdirSync(barrierDir).length >= o.barrier, 'both builds to compile', 120_000)
  return { dir, steved, tag, log, go, pkgs, bed, emerge }
}
