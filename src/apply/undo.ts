/**
 * The undo stack: every change registers its undo right after it succeeds; `unwind()` runs them in
 * reverse, treats "already gone" as success, collects every error and never stops half-way.
 */
import { isAlreadyGone } from '../netlink/errno.js'

export interface UndoFailure {
  readonly name: string
  readonly error: unknown
}

export interface UnwindResult {
  /** names of the steps undone (or found already gone), in the order they ran */
  readonly undone: string[]
  readonly failed: UndoFailure[]
}

interface Step {
  readonly name: string
  readonly run: () => Promise<unknown> | unknown
}

export class UndoStack {
  #steps: Step[] = []

  /** Registers how to undo a change that has just succeeded; `name` says what it undoes ("delete link macvlan0"). */
  push (name: string, run: () => Promise<unknown> | unknown): void {
    this.#steps.push({ name, run })
  }

  get size (): number {
    return this.#steps.length
  }

  /** Names of the registered undos, oldest first. */
  names (): string[] {
    return this.#steps.map(s => s.name)
  }

  /**
   * Runs every undo, newest first, each one once. The stack is empty afterwards, so a second
   * unwind does nothing.
   */
  async unwind (): Promise<UnwindResult> {
    const steps = this.#steps.reverse()
    this.#steps = []
    const undone: string[] = []
    const failed: UndoFailure[] = []
    for (const step of steps) {
      try {
        await step.run()
        undone.push(step.name)
      } catch (error) {
        if (isAlreadyGone(error)) undone.push(step.name)
        else failed.push({ name: step.name, error })
      }
    }
    return { undone, failed }
  }
}
