/** Finding an executable the way a shell would, without starting one. */
import { accessSync, constants } from 'node:fs'
import { delimiter, join } from 'node:path'

/** The path of an executable named `name` in the directories of `path` (default: $PATH), or null. */
export function onPath (name: string, path = process.env.PATH ?? ''): string | null {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue
    const file = join(dir, name)
    try {
      accessSync(file, constants.X_OK)
      return file
    } catch { /* not here */ }
  }
  return null
}
