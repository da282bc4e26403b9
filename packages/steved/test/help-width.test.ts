// `steved --help` in a terminal of 60, 80 (a pipe: commander's default) and 120 columns: no line
// is wider than the terminal, and a paragraph's line ends only where the next word would not
// have fitted (issue 17: manual line breaks plus commander's own wrapping ended lines
// mid-sentence). tmux gives the program a real terminal of the width asked.

import * as path from 'node:path'
import t from 'tap'

import { run } from '../../../test/helpers/proc'

const STEVED = path.join(__dirname, '..', 'bin', 'steved.js')

/** The description: the lines between "Usage:" and "Options:". */
function description(help: string): string[] {
  const lines = help.split('\n')
  return lines.slice(lines.findIndex((l) => l.startsWith('Usage:')) + 2, lines.findIndex((l) => l.startsWith('Options:')) - 1)
}

function check(t: Tap.Test, help: string, width: number): void {
  const all = help.split('\n')
  t.same(all.filter((l) => [...l].length > width), [], `no line wider than ${width}`)
  const desc = description(help)
  t.ok(desc.length > 5, 'the description is there')
  const early: string[] = []
  for (let i = 0; i + 1 < desc.length; i++) {
    const [a, b] = [desc[i], desc[i + 1]]
    // A paragraph goes on when the next line is not an example (indented) and this one does
    // not end a sentence or introduce an example.
    if (/^\s/.test(b) || /^\s/.test(a) || /[.:]$/.test(a) || b === '') continue
    const next = b.split(' ')[0]
    if ([...a].length + 1 + [...next].length <= width) early.push(`${a} | ${next}`)
  }
  t.same(early, [], 'no line ends where the next word would have fitted')
  t.match(desc.join(' ').replace(/\s+/g, ' '), /Serves N job tokens to every make, ninja, cargo, GCC LTO, Portage and pytest on this machine/)
}

t.test('a pipe: 80 columns', async (t) => {
  const r = await run(process.execPath, [STEVED, '--help'])
  t.equal(r.code, 0)
  check(t, r.stdout, 80)
})

for (const width of [60, 120]) {
  t.test(`a terminal of ${width} columns`, async (t) => {
    const session = `steved-help-${width}-${process.pid}`
    t.teardown(() => run('tmux', ['kill-session', '-t', session]).catch(() => {}))
    // sleep keeps the pane (and the output) there until it is captured.
    const cmd = `${process.execPath} ${STEVED} --help; sleep 30`
    const r = await run('tmux', ['new-session', '-d', '-s', session, '-x', String(width), '-y', '200', cmd])
    t.equal(r.code, 0, r.stderr)
    let screen = ''
    const until = Date.now() + 15000
    while (!/--metrics/.test(screen) && Date.now() < until) {
      await new Promise((res) => setTimeout(res, 200))
      screen = (await run('tmux', ['capture-pane', '-p', '-J', '-S', '-', '-t', session])).stdout
    }
    check(t, screen, width)
  })
}
