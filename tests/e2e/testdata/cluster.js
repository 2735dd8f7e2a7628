// Issue 11 case 2: Node's cluster module in round-robin mode (the Linux
// default): the primary accepts and passes each connection to a worker over
// IPC (SCM_RIGHTS). Usage: node cluster.js HOST PORT
const cluster = require('cluster');
const http = require('http');
cluster.schedulingPolicy = cluster.SCHED_RR;
const [host, port] = [process.argv[2], +process.argv[3]];
if (cluster.isPrimary) {
  let ready = 0;
  for (let i = 0; i < 2; i++) cluster.fork();
  cluster.on('listening', () => { if (++ready === 2) console.log('listening'); });
  cluster.on('exit', (w, code, sig) => console.log(`worker ${w.id} exited ${code} ${sig}`));
} else {
  http.createServer((req, res) => {
    res.setHeader('Connection', 'close');
    res.end(`worker ${cluster.worker.id}\n`);
  }).listen(port, host);
}
