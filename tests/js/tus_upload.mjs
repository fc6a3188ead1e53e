// Upload one file with tus-js-client, as a browser or a phone app would, then print the
// upload's URL. Usage: node tus_upload.mjs <endpoint> <token> <file> [chunk bytes]
import fs from "node:fs";
import path from "node:path";
import * as tus from "tus-js-client";

const [endpoint, token, file, chunk] = process.argv.slice(2);
const size = fs.statSync(file).size;
const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  uploadSize: size,
  // A stream is read one chunk at a time: the chunk is what the client holds in memory.
  chunkSize: Number(chunk || 16 * 1024 * 1024),
  headers: { Authorization: `Bearer ${token}` },
  metadata: { filename: path.basename(file), filetype: "video/mp4" },
  retryDelays: [250, 1000, 2000],
  onError(error) {
    console.error(`upload failed: ${error}`);
    process.exit(1);
  },
  onSuccess() {
    console.log(upload.url);
  },
});
upload.start();
