// One make.conf text for Gentoo users, the seeds', in every place that gives it: README.md's
// Gentoo section, the shim's README, `steved --help` and the steved ebuilds' pkg_postinst; the
// bashrc lines of both READMEs are the ones the real-emerge tests install (helpers/portage.ts
// writes seedsMakeConf and writeUserBashrc into the test bed).
import * as fs from 'node:fs'
import * as path from 'node:path'
import t from 'tap'
import { run } from '../../../test/helpers/proc'
import { ROOT } from '../../../test/helpers/steved'
import { MODULE, PKG, writeUserBashrc } from './helpers/emerge'
import { seedsMakeConf } from './helpers/portage'

const LINES = seedsMakeConf('/dev/steve').trim().split('\n')

/** The ```sh blocks of a markdown file. */
function shBlocks(file: string): string[] {
  return [...fs.readFileSync(file, 'utf8').matchAll(/^```sh\n([\s\S]*?)^```$/gm)].map((m) => m[1].trim())
}

t.test('the seeds make.conf is what the tests run', async (t) => {
  t.same(LINES, ['MAKEOPTS="-j32 -l32"', 'NINJAOPTS="-l32"', 'MAKEFLAGS="-l32 --jobserver-auth=fifo:/dev/steve"'])
})

t.test("README.md's Gentoo section and the shim's README: the make.conf block and the bashrc block", async (t) => {
  const dir = fs.mkdtempSync(path.join(ROOT, 'test-results', 'makeconf-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const bashrc = fs
    .readFileSync(writeUserBashrc(dir), 'utf8')
    .replace(/^# .*\n/, '')
    .replaceAll(MODULE, '/usr/share/steved/steved-jobserver.bashrc')
    .trim()
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8')
  const gentoo = readme.slice(readme.indexOf('## Using it on Gentoo'), readme.indexOf('\n## ', readme.indexOf('## Using it on Gentoo') + 3))
  fs.writeFileSync(path.join(dir, 'gentoo.md'), gentoo)
  for (const [name, file] of [
    ['README.md (Gentoo section)', path.join(dir, 'gentoo.md')],
    ['packages/emerge-shim/README.md', path.join(PKG, 'README.md')],
  ]) {
    const blocks = shBlocks(file)
    t.ok(blocks.includes(LINES.join('\n')), `${name}: the make.conf block is the seeds'`)
    t.ok(blocks.includes(bashrc), `${name}: the bashrc block is the one the tests install`)
  }
})

t.test('steved --help gives the same three lines', async (t) => {
  const r = await run(process.execPath, [path.join(ROOT, 'packages', 'steved', 'bin', 'steved.js'), '--help'], { timeoutMs: 30_000 })
  t.equal(r.code, 0)
  const out = r.stdout.split('\n').map((l) => l.trim())
  for (const l of LINES) t.ok(out.includes(l), `--help has ${l}`)
})

t.test('pkg_postinst of the steved ebuilds gives the same three lines and the bashrc lines', async (t) => {
  const dir = path.join(ROOT, 'ebuilds', 'dev-build', 'steved')
  const ebuilds = fs.readdirSync(dir).filter((f) => f.endsWith('.ebuild'))
  t.ok(ebuilds.length >= 1, ebuilds.join(' '))
  for (const f of ebuilds) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8')
    const postinst = text.slice(text.indexOf('pkg_postinst() {'), text.indexOf('\n}\n', text.indexOf('pkg_postinst() {')))
    const elogs = [...postinst.matchAll(/^\s*elog (['"])(.*)\1$/gm)].map((m) => m[2].trim())
    for (const l of LINES) t.ok(elogs.includes(l), `${f}: elog ${l}`)
    t.ok(elogs.includes('steved_jobserver_hook'), `${f}: the bashrc lines`)
  }
})
