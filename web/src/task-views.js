// My tasks, a new task, and one task with its clips.
import * as api from "./api.js";
import { append, field, formatBytes, formatSeconds, formatTime, h, replace } from "./dom.js";
import { poll } from "./poll.js";
import { interruptedUploads, startUpload } from "./upload.js";

const ACTIVE = new Set(["queued", "processing"]);
const PAGE = 20;
const CAP = 100;

function statusBadge(status) {
  return h("span", { class: `status status-${status}`, text: status });
}

function progressBar(label, value, max = 100) {
  return h("progress", { max, value, "aria-label": label, text: `${Math.round((value / max) * 100)} %` });
}

// What the API may add about the queue and the clips: shown only when present.
function queueFacts(task) {
  const facts = [];
  const queue = task.queue || {};
  if (Number.isFinite(queue.position)) facts.push(`Place in line: ${queue.position}`);
  if (Number.isFinite(queue.eta_seconds)) facts.push(`About ${formatSeconds(queue.eta_seconds)} left`);
  // A part made in several formats is one clip of the plan.
  const made = Array.isArray(task.clips) ? new Set(task.clips.map((clip) => clip.index)).size : task.clips;
  if (Number.isFinite(task.clips_total)) facts.push(`Clips: ${made || 0} of ${task.clips_total}`);
  else if (Number.isFinite(made) && made > 0) facts.push(`Clips: ${made}`);
  return facts;
}

function sourceName(task) {
  const source = task.source || {};
  return source.kind === "url" ? source.url : source.filename || "upload";
}

function taskRow(task) {
  const link = h("a", { href: `#/tasks/${encodeURIComponent(task.id)}`, class: "task-link" },
    task.source ? sourceName(task) : `Task ${task.id.slice(0, 8)}`);
  return h(
    "li",
    { class: "task", "data-task-id": task.id, "data-status": task.status },
    h("div", { class: "task-head" }, link, statusBadge(task.status)),
    progressBar(`Progress of task ${task.id.slice(0, 8)}`, task.progress || 0),
    h("p", { class: "meta" }, [formatTime(task.created_at), ...queueFacts(task)].filter(Boolean).join(" · ")),
  );
}

function signature(tasks) {
  return JSON.stringify(tasks);
}

export function tasksView(go, register) {
  let max = PAGE;
  let seen = "";
  const list = h("ul", { class: "tasks", "aria-live": "polite", "aria-busy": "true" });
  const empty = h("p", { class: "empty", hidden: true, text: "No tasks yet. Submit a video to get clips." });
  const error = h("p", { class: "form-error", role: "alert" });
  const more = h("button", { type: "button", hidden: true, text: "Show more" });

  async function load() {
    const answer = await api.listTasks(max, 1);
    const tasks = answer.tasks || [];
    const changed = signature(tasks) !== seen;
    if (changed) {
      seen = signature(tasks);
      replace(list, tasks.map(taskRow));
    }
    list.setAttribute("aria-busy", "false");
    empty.hidden = tasks.length > 0;
    more.hidden = tasks.length < max || max >= CAP;
    error.textContent = "";
    return { changed };
  }

  const poller = poll(
    () => load().catch((problem) => {
      error.textContent = problem.message;
      throw problem;
    }),
    { onChange: (result) => result.changed },
  );
  more.addEventListener("click", () => {
    max = Math.min(max + PAGE, CAP);
    poller.nudge();
  });
  register(poller.start());

  return h(
    "section",
    { class: "card", "aria-labelledby": "page-title" },
    h("div", { class: "section-head" }, h("h1", { id: "page-title", text: "My tasks" }),
      h("a", { href: "#/new", class: "button primary", text: "New task" })),
    error,
    empty,
    list,
    more,
  );
}

function describeError(error) {
  if (error.status === 429 && error.retryAfter) return `${error.message}. Try again in ${error.retryAfter} s.`;
  return error.message;
}

export function newTaskView(go) {
  const state = h("p", { class: "upload-state", role: "status", "aria-live": "polite" });
  const bar = h("progress", { max: 100, value: 0, "aria-label": "Upload progress", hidden: true });
  const uploadError = h("p", { class: "form-error", role: "alert" });
  const pause = h("button", { type: "button", hidden: true, text: "Pause" });
  const resume = h("button", { type: "button", hidden: true, text: "Resume" });
  const picker = field("Video file", { type: "file", name: "file", accept: "video/*,.mp4,.mov,.mkv,.webm,.avi" });
  const drop = h("div", { class: "drop", "data-testid": "drop" },
    h("p", { text: "Drop a video here, or choose one:" }), picker.wrapper);
  const interrupted = h("div", { class: "interrupted" });
  let current = null;

  interruptedUploads().then((entries) => {
    if (!entries.length) return;
    replace(interrupted, h("p", { class: "notice", role: "status" },
      `${entries.length === 1 ? "An upload was" : `${entries.length} uploads were`} interrupted. ` +
      "Choose the same file again to continue where it stopped."));
  });

  async function send(file) {
    if (!file || current) return;
    uploadError.textContent = "";
    replace(interrupted);
    bar.hidden = false;
    bar.value = 0;
    const name = h("strong", { class: "file-name", text: file.name });
    replace(state, "Preparing ", name);
    try {
      current = await startUpload(file, {
        onProgress(sent, total) {
          bar.value = total ? Math.round((sent / total) * 100) : 0;
          bar.setAttribute("aria-valuetext", `${formatBytes(sent)} of ${formatBytes(total)}`);
        },
        onState(text) {
          replace(state, `${text}: `, h("strong", { class: "file-name", text: file.name }));
        },
      });
      pause.hidden = !current.resumable;
      resume.hidden = true;
      const task = await current.done;
      go(`#/tasks/${encodeURIComponent(task.id)}`);
    } catch (error) {
      if (!(error instanceof api.ApiError)) throw error;
      uploadError.textContent = describeError(error);
      pause.hidden = resume.hidden = true;
    } finally {
      current = null;
    }
  }

  pause.addEventListener("click", () => {
    current?.pause();
    pause.hidden = true;
    resume.hidden = false;
    replace(state, "Paused: ", h("strong", { class: "file-name", text: picker.input.files[0]?.name || "" }));
    resume.focus();
  });
  resume.addEventListener("click", () => {
    current?.resume();
    resume.hidden = true;
    pause.hidden = false;
    pause.focus();
  });
  picker.input.addEventListener("change", () => send(picker.input.files[0]));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    send(event.dataTransfer.files[0]);
  });

  const url = field("Video URL", { type: "url", name: "url", placeholder: "https://videos.example/run.mp4", required: true });
  const urlButton = h("button", { type: "submit", class: "primary", text: "Submit URL" });
  const urlForm = h("form", { class: "url-form", novalidate: true }, url.wrapper, urlButton);
  urlForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    urlButton.disabled = true;
    url.error.textContent = "";
    try {
      const task = await api.submitUrl(url.input.value.trim());
      go(`#/tasks/${encodeURIComponent(task.id)}`);
    } catch (error) {
      if (!(error instanceof api.ApiError)) throw error;
      url.error.textContent = describeError(error);
    } finally {
      urlButton.disabled = false;
    }
  });

  return h(
    "section",
    { class: "card", "aria-labelledby": "page-title" },
    h("h1", { id: "page-title", text: "New task" }),
    h("h2", { text: "Upload a file" }),
    interrupted,
    drop,
    state,
    bar,
    h("div", { class: "actions" }, pause, resume),
    uploadError,
    h("h2", { text: "Or give a URL" }),
    urlForm,
  );
}

function clipCard(task, clip, position, blobs) {
  const number = Number.isFinite(clip.index) ? clip.index : position + 1;
  const video = h("video", { controls: true, preload: "none", "aria-label": `Clip ${number}`, playsInline: true });
  const play = h("button", { type: "button", text: `Play clip ${number}` });
  const download = h("button", { type: "button", text: `Download clip ${number}` });
  const problem = h("p", { class: "form-error", role: "alert" });
  if (clip.links.poster) {
    blobs.get(clip.links.poster).then((url) => {
      video.poster = url;
    }).catch(() => {});
  }
  play.addEventListener("click", async () => {
    play.disabled = true;
    try {
      video.src = await blobs.get(clip.links.download);
      play.hidden = true;
      video.focus();
      await video.play().catch(() => {});
    } catch (error) {
      problem.textContent = error.message;
      play.disabled = false;
    }
  });
  download.addEventListener("click", async () => {
    download.disabled = true;
    try {
      const link = h("a", { href: await blobs.get(clip.links.download), download: `${task.id}-clip-${clip.index}${formatSuffix(clip)}.mp4`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
    } catch (error) {
      problem.textContent = error.message;
    } finally {
      download.disabled = false;
    }
  });
  return h(
    "li",
    { class: "clip", "data-clip-index": clip.index },
    h("h3", { text: clip.format && clip.format !== "16:9" ? `Clip ${number} · ${clip.format}` : `Clip ${number}` }),
    video,
    h("p", { class: "meta", text: `${clip.duration_seconds.toFixed(1)} s · ${formatBytes(clip.size_bytes)}` }),
    h("div", { class: "actions" }, play, download),
    problem,
  );
}

// A clip in another frame than 16:9 (a task may ask for 9:16 and 1:1 beside it) says so in its file name.
function formatSuffix(clip) {
  return clip.format && clip.format !== "16:9" ? `-${clip.format.replace(":", "x")}` : "";
}

// Clip files fetched once with the token and kept as blob: URLs while the page is shown.
function blobCache() {
  const urls = new Map();
  return {
    get(link) {
      if (!urls.has(link)) {
        const pending = api.fetchBlob(link).then((blob) => URL.createObjectURL(blob));
        pending.catch(() => urls.delete(link));
        urls.set(link, pending);
      }
      return urls.get(link);
    },
    release() {
      for (const pending of urls.values()) pending.then((url) => URL.revokeObjectURL(url)).catch(() => {});
      urls.clear();
    },
  };
}

export function taskView(go, register, id) {
  const blobs = blobCache();
  const title = h("h1", { id: "page-title", text: "Task" });
  const source = h("p", { class: "source" });
  const status = h("p", { class: "task-status", role: "status", "aria-live": "polite" });
  const bar = progressBar("Task progress", 0);
  const facts = h("p", { class: "meta" });
  const failure = h("p", { class: "failure", role: "alert", hidden: true });
  const clips = h("ul", { class: "clips" });
  const error = h("p", { class: "form-error", role: "alert" });
  const remove = h("button", { type: "button", class: "danger", text: "Delete task" });
  let shownClips = "";
  let seen = "";

  function show(task) {
    title.textContent = `Task ${task.id.slice(0, 8)}`;
    replace(source, task.source?.kind === "url" ? "From URL: " : "Uploaded file: ", h("span", { class: "source-name", text: sourceName(task) }));
    replace(status, "Status: ", statusBadge(task.status), ` · submitted ${formatTime(task.created_at)}`);
    bar.value = task.progress || 0;
    bar.textContent = `${task.progress || 0} %`;
    facts.textContent = queueFacts(task).join(" · ");
    failure.hidden = task.status !== "failed";
    failure.textContent = task.status === "failed" ? `Failed: ${task.failure_reason || "no reason given"}` : "";
    const clipKey = JSON.stringify(task.clips || []);
    if (clipKey !== shownClips) {
      shownClips = clipKey;
      replace(clips, (task.clips || []).map((clip, position) => clipCard(task, clip, position, blobs)));
    }
  }

  const poller = poll(
    async () => {
      try {
        const task = await api.getTask(id);
        const changed = JSON.stringify(task) !== seen;
        seen = JSON.stringify(task);
        show(task);
        error.textContent = "";
        // A finished task changes no more: polling stops.
        return ACTIVE.has(task.status) ? { changed } : false;
      } catch (problem) {
        error.textContent = problem.message;
        if (problem.status === 404) return false;
        throw problem;
      }
    },
    { onChange: (result) => result.changed },
  );
  register({ stop: () => { poller.stop(); blobs.release(); } });
  poller.start();

  const dialog = h("dialog", { class: "confirm", "aria-labelledby": "confirm-title" });
  const confirmYes = h("button", { type: "button", class: "danger", text: "Yes, delete it" });
  const confirmNo = h("button", { type: "button", text: "Keep it" });
  append(dialog, [
    h("h2", { id: "confirm-title", text: "Delete this task?" }),
    h("p", { text: "Its clips and its original are removed; a task still running is canceled." }),
    h("div", { class: "actions" }, confirmNo, confirmYes),
  ]);
  remove.addEventListener("click", () => dialog.showModal());
  confirmNo.addEventListener("click", () => dialog.close());
  confirmYes.addEventListener("click", async () => {
    confirmYes.disabled = true;
    try {
      await api.deleteTask(id);
      dialog.close();
      go("#/tasks");
    } catch (problem) {
      error.textContent = problem.message;
      dialog.close();
    } finally {
      confirmYes.disabled = false;
    }
  });

  return h(
    "section",
    { class: "card", "aria-labelledby": "page-title" },
    h("p", {}, h("a", { href: "#/tasks", text: "← My tasks" })),
    title,
    source,
    status,
    bar,
    facts,
    failure,
    error,
    h("h2", { text: "Clips" }),
    clips,
    h("div", { class: "actions end" }, remove),
    dialog,
  );
}
