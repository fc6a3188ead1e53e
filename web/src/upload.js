// Uploads: resumable through the tus 1.0 server at /uploads when it answers, a plain
// multipart POST /tasks otherwise. A tus upload survives a reload: tus-js-client keeps
// the upload's URL under the file's fingerprint, and picking the same file again resumes it.
import { Upload, defaultOptions } from "tus-js-client";
import * as api from "./api.js";
import * as session from "./session.js";

// A multiple of 256 KiB, as Cloud Storage resumable uploads want; the api's own chunk.
export const CHUNK_BYTES = 8 * 1024 * 1024;

function uploadIdFrom(url) {
  return new URL(url, location.href).pathname.split("/").filter(Boolean).pop();
}

// The fingerprint carries the account, so one user never resumes another's upload.
async function fingerprint(file, options) {
  const base = await defaultOptions.fingerprint(file, options);
  return `${session.load()?.email || "anonymous"}:${base}`;
}

export async function interruptedUploads() {
  try {
    const all = await defaultOptions.urlStorage.findAllUploads();
    const owner = `${session.load()?.email || "anonymous"}:`;
    return all.filter((entry) => entry.urlStorageKey.includes(owner));
  } catch {
    return [];
  }
}

// Starts uploading `file`; calls onProgress(sent, total), onState(text); resolves with the task.
export async function startUpload(file, { onProgress, onState }) {
  if (!(await api.tusAvailable())) {
    onState("Uploading");
    const upload = api.uploadMultipart(file, onProgress);
    return { resumable: false, done: upload.done, pause: upload.abort, resume: null };
  }

  let resolveDone;
  let rejectDone;
  const done = new Promise((resolve, reject) => {
    resolveDone = resolve;
    rejectDone = reject;
  });
  const upload = new Upload(file, {
    endpoint: new URL("/uploads", location.href).href,
    chunkSize: CHUNK_BYTES,
    retryDelays: [0, 1000, 3000, 5000],
    metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
    fingerprint,
    storeFingerprintForResuming: true,
    removeFingerprintOnSuccess: true,
    onBeforeRequest(request) {
      const token = session.token();
      if (token) request.setHeader("Authorization", `Bearer ${token}`);
    },
    onProgress,
    async onSuccess() {
      try {
        onState("Creating the task");
        resolveDone(await api.submitUpload(uploadIdFrom(upload.url)));
      } catch (error) {
        rejectDone(error);
      }
    },
    async onError(error) {
      const response = error.originalResponse;
      if (response) {
        let body = {};
        try {
          body = JSON.parse(response.getBody() || "{}");
        } catch {
          body = {};
        }
        const retry = Number.parseInt(response.getHeader("Retry-After") || "", 10);
        rejectDone(
          new api.ApiError(
            response.getStatus(),
            body.error?.code || "upload_failed",
            body.error?.message || `the upload failed (${response.getStatus()})`,
            Number.isFinite(retry) ? retry : undefined,
          ),
        );
      } else {
        rejectDone(new api.ApiError(0, "network", "the upload was interrupted; resume it when the connection is back"));
      }
    },
  });

  const previous = await upload.findPreviousUploads();
  if (previous.length) {
    upload.resumeFromPreviousUpload(previous[0]);
    onState("Resuming the earlier upload");
  } else {
    onState("Uploading");
  }
  upload.start();
  return {
    resumable: true,
    done,
    pause: () => upload.abort(),
    resume: () => upload.start(),
  };
}
