// Copies the chart library from node_modules into service/web/vendor/ and records its version.
// Run after `npm ci` in this folder: `npm run vendor`. Nothing here is needed at run time.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const vendor = join(here, "..", "service", "web", "vendor");
const pkgDir = join(here, "node_modules", "uplot");
const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));

mkdirSync(join(vendor, "uplot"), { recursive: true });
for (const [from, to] of [
  ["dist/uPlot.iife.min.js", "uplot/uPlot.iife.min.js"],
  ["dist/uPlot.min.css", "uplot/uPlot.min.css"],
  ["LICENSE", "uplot/LICENSE"],
]) {
  copyFileSync(join(pkgDir, from), join(vendor, to));
}

writeFileSync(
  join(vendor, "README.md"),
  `# Vendored front-end libraries

Copied from the npm registry at build time; the live page loads them from \`/static/vendor/\`, never
from a CDN, and the service needs no Node at run time.

| library | version | license | files |
| --- | --- | --- | --- |
| [uPlot](https://github.com/leeoniya/uPlot) (npm \`uplot\`) | ${pkg.version} | ${pkg.license} (\`uplot/LICENSE\`) | \`uplot/uPlot.iife.min.js\`, \`uplot/uPlot.min.css\` |

To update: change the version in \`web/package.json\` (repository root), then

\`\`\`bash
cd web && npm install && npm run vendor   # rewrites service/web/vendor/ and this file
\`\`\`

and run \`pytest tests/web\`. \`web/node_modules/\` is not committed.
`,
);
console.log(`vendored uplot ${pkg.version} into ${vendor}`);
