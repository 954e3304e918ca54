// Loaded with --import by bench/profile.ts: the first SIGUSR2 starts V8's sampling profiler,
// the second stops it and writes the profile to $GATEHOUSE_PROFILE_OUT (renamed into place, so
// the file appears whole). Start-up and warm-up stay out of the profile, which --cpu-prof
// cannot do.
import { renameSync, writeFileSync } from 'node:fs'
import { Session } from 'node:inspector'

const out = process.env.GATEHOUSE_PROFILE_OUT
const session = new Session()
session.connect()
let running = false
process.on('SIGUSR2', () => {
  if (!running) {
    running = true
    session.post('Profiler.enable', () => session.post('Profiler.setSamplingInterval', { interval: 250 }, () => session.post('Profiler.start')))
    return
  }
  running = false
  session.post('Profiler.stop', (err, result) => {
    if (err !== null || out === undefined) return
    writeFileSync(`${out}.part`, JSON.stringify(result.profile))
    renameSync(`${out}.part`, out)
  })
})
