import { fileURLToPath } from 'node:url';
import react from '@vitejs/plugin-react';
import { defineConfig } from 'vite';

// The server serves what this writes at `/` (src/handlers/http/dashboard.ts reads dist/ui).
export default defineConfig({
  plugins: [react()],
  base: '/',
  resolve: {
    // The root workspace holds another React (19, for @redocly/cli's docs): the libraries hoisted
    // there (react-router, recharts) must use this app's React 18, one copy.
    dedupe: ['react', 'react-dom'],
  },
  build: {
    outDir: fileURLToPath(new URL('../dist/ui', import.meta.url)),
    emptyOutDir: true,
    sourcemap: true,
    // The charts and the diff view are loaded with the report page only (React.lazy), so the
    // experiment list and sign-in stay small.
    chunkSizeWarningLimit: 600,
  },
  server: {
    // `npm run dev -w ui` against a server on :8080 (npm start): the API and the live feed proxied.
    proxy: {
      '/api': { target: 'http://127.0.0.1:8080', ws: true },
    },
  },
});
