import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration suites start real servers on loopback ports; running files in parallel on 2 cores is fine
    // because every server binds port 0.
    pool: 'forks',
  },
});
