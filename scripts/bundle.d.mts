// Types of scripts/bundle.mjs, for the tests that read its entry list (test/unit/ops/containerfile.test.ts).
/** tsc outputs (relative to dist/) that become entries of dist/bundle, under their base names */
export declare const ENTRIES: readonly string[]
/** where the bundle is written, relative to the repository root */
export declare const OUT_DIR: string
export declare function bundle (root: string): Promise<void>
