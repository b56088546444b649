// Tiny static file server for this directory (Node built-ins only).
//   node serve.mjs [PORT]      PORT from argv, else $PORT, else 5173; 0 = any free port
// Prints "listening on http://127.0.0.1:PORT" once ready.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));
const port = Number(process.argv[2] ?? process.env.PORT ?? 5173);
const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
};

const server = http.createServer((req, res) => {
  const { pathname } = new URL(req.url, 'http://localhost');
  let file;
  try {
    file = path.join(root, decodeURIComponent(pathname));
  } catch {
    file = null; // malformed %-escape
  }
  if (file && pathname.endsWith('/')) file = path.join(file, 'index.html');
  // Stay inside the directory; no dotfiles, no node_modules.
  const rel = file && path.relative(root, file);
  if (!rel || rel.startsWith('..') || path.isAbsolute(rel) ||
      rel.split(path.sep).some((part) => part.startsWith('.') || part === 'node_modules')) {
    res.writeHead(404).end('not found\n');
    return;
  }
  fs.readFile(file, (err, body) => {
    if (err) {
      res.writeHead(404).end('not found\n');
      return;
    }
    res.writeHead(200, {
      'Content-Type': types[path.extname(file)] ?? 'application/octet-stream',
      'Cache-Control': 'no-store', // always serve the file being edited
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
});

// HOST=0.0.0.0 in a container (docker-compose.yml); loopback otherwise.
const host = process.env.HOST || '127.0.0.1';
server.listen(port, host, () => {
  console.log(`listening on http://${host}:${server.address().port}`);
});
