#!/usr/bin/env node
// Writes dist/virtiofsd.1 from the compiled option table (dist/man.js); run by `npm run build:ts`
// after tsc, so the man page and `--help` always describe the same options.
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { manPage } = createRequire(import.meta.url)(path.join(root, 'dist', 'man.js'));
fs.writeFileSync(path.join(root, 'dist', 'virtiofsd.1'), manPage());
