import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Integration tests stop and rewrite real processes; keep files in parallel but bounded to the 2 cores.
    maxWorkers: 2,
    // Long CLI sequences against real services: generous, so a loaded machine slows a test down
    // rather than failing it (a hang still ends).
    testTimeout: 120_000,
    hookTimeout: 30_000,
  },
});
