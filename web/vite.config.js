import { defineConfig } from "vite";

// The build is served by nginx locally and by a Cloud Storage backend bucket on Google
// Cloud, under a Content-Security-Policy that allows no inline script: nothing inline is
// emitted, and asset names carry a content hash so they can be cached for a year.
export default defineConfig({
  base: "/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2020",
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    rollupOptions: {
      output: {
        entryFileNames: "assets/[name]-[hash].js",
        chunkFileNames: "assets/[name]-[hash].js",
        assetFileNames: "assets/[name]-[hash][extname]",
      },
    },
  },
});
