import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// Served by the control plane under /console; the output is embedded in the warren binary
// (crates/warren-console/src/lib.rs), so it must not depend on anything fetched at run time.
export default defineConfig({
  base: "/console/",
  plugins: [preact()],
  build: {
    outDir: "../dist",
    emptyOutDir: true,
    // No source maps: the binary carries what the browser runs, nothing else.
    sourcemap: false,
    chunkSizeWarningLimit: 800,
  },
});
