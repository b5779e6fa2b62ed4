// /v1/uploads: a large file sent in parts (each streamed to disk), then assembled in the client's order into an ordinary File.
import { Router, type Request } from 'express';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import type { AppContext } from './context.ts';
import { badRequest, noSuchObject } from './errors.ts';
import { checkFineTuneFilename, createFile, toFileObject } from './files.ts';
import { singleFileUpload } from './multipart.ts';
import { validate, type BodyOf } from './validation.ts';
import type { components } from './openapi-types.ts';
import { newId, nowSeconds } from '../store/ids.ts';
import type { FileRow, UploadPartRow, UploadRow, UploadStatus } from '../store/store.ts';

type UploadObject = components['schemas']['Upload'];
type UploadPartObject = components['schemas']['UploadPart'];

const MiB = 1024 * 1024;
/** The hosted API's limits: parts of at most 64 MB, an Upload of at most 8 GB (also openapi.yaml's `bytes` maximum). */
const MAX_PART_BYTES = 64 * MiB;
const MAX_UPLOAD_BYTES = 8 * 1024 * MiB;
/** An Upload takes parts and can complete for an hour after its creation. */
const UPLOAD_LIFETIME_SECONDS = 3600;

function toUploadObject(row: UploadRow, file: FileRow | null = null): UploadObject {
  return {
    id: row.id,
    object: 'upload',
    bytes: row.bytes,
    created_at: row.created_at,
    expires_at: row.expires_at,
    filename: row.filename,
    purpose: row.purpose as UploadObject['purpose'],
    // A completion in progress is still pending to the client: it either finishes or leaves the upload as it was.
    status: row.status === 'completing' ? 'pending' : row.status,
    file: file && toFileObject(file),
  };
}

function toUploadPartObject(part: UploadPartRow): UploadPartObject {
  return { id: part.id, object: 'upload.part', created_at: part.created_at, upload_id: part.upload_id };
}

/** Why an upload that is not pending refuses `action` (a 400: a refused state change). */
function notPending(upload: UploadRow, action: string): Error {
  const why: Record<Exclude<UploadStatus, 'pending'>, string> = {
    completing: 'it is being completed by another request',
    completed: 'it is already completed',
    cancelled: 'it was already cancelled',
    expired: `it expired at ${new Date(upload.expires_at * 1000).toISOString()} (an Upload lasts an hour); create a new one`,
  };
  return badRequest(`Cannot ${action} Upload ${upload.id}: ${why[upload.status as Exclude<UploadStatus, 'pending'>]}.`, null, 'invalid_upload_status');
}

/** Refuses `partIds` unless each names one of the upload's parts, at most once, and together they make `bytes`. */
function checkPartIds(upload: UploadRow, partIds: string[], stored: UploadPartRow[]): void {
  const byId = new Map(stored.map((p) => [p.id, p]));
  const seen = new Set<string>();
  let total = 0;
  for (const [i, id] of partIds.entries()) {
    const part = byId.get(id);
    if (!part) throw badRequest(`Invalid part_ids[${i}]: '${id}' is not a part of Upload ${upload.id}.`, `part_ids[${i}]`, 'invalid_part_id');
    if (seen.has(id)) throw badRequest(`Invalid part_ids[${i}]: part '${id}' is listed twice.`, `part_ids[${i}]`, 'duplicate_part_id');
    seen.add(id);
    total += part.bytes;
  }
  if (total !== upload.bytes) {
    throw badRequest(`The parts listed in part_ids add up to ${total} bytes, but Upload ${upload.id} was created with bytes=${upload.bytes}.`, 'part_ids', 'upload_size_mismatch');
  }
}

/**
 * Streams the parts, in order, into `tempPath` and returns the MD5 (hex) of what it wrote. Memory use is one
 * read buffer at a time, whatever the file's size.
 */
async function assemble(read: (partId: string) => NodeJS.ReadableStream, partIds: string[], tempPath: string): Promise<string> {
  const md5 = createHash('md5');
  async function* chunks() {
    for (const id of partIds) {
      for await (const chunk of read(id)) {
        md5.update(chunk as Buffer);
        yield chunk as Buffer;
      }
    }
  }
  await pipeline(chunks, createWriteStream(tempPath));
  return md5.digest('hex');
}

export function uploadsRouter(ctx: AppContext): Router {
  const router = Router();
  const { uploads, blobs: fileBlobs, parts: partBlobs } = ctx.store;

  /** The request's upload in the caller's project (another project's is a 404, as if it did not exist). */
  const uploadOf = async (req: Request): Promise<UploadRow> => {
    const id = req.params.upload_id as string;
    const upload = await uploads.get(req.project, id);
    if (!upload) throw noSuchObject('Upload', id, 'upload_id');
    return upload;
  };
  const pendingUploadOf = async (req: Request, action: string): Promise<UploadRow> => {
    const upload = await uploadOf(req);
    if (upload.status !== 'pending') throw notPending(upload, action);
    return upload;
  };

  router.post('/uploads', validate('createUpload'), async (req, res) => {
    const body = req.body as BodyOf<'createUpload'>;
    // Refused now rather than after gigabytes of parts: the File it becomes would be refused for this name.
    if (body.purpose === 'fine-tune') checkFineTuneFilename(body.filename, 'filename');
    const createdAt = nowSeconds();
    const row: UploadRow = {
      id: newId('upload_'),
      project: req.project,
      bytes: body.bytes,
      filename: body.filename,
      mime_type: body.mime_type,
      purpose: body.purpose,
      created_at: createdAt,
      expires_at: createdAt + UPLOAD_LIFETIME_SECONDS,
      file_expires_after: body.expires_after?.seconds ?? null,
      status: 'pending',
    };
    await uploads.insert(row);
    res.json(toUploadObject(row));
  });

  const dataPart = { field: 'data', maxBytes: MAX_PART_BYTES, tooLargeMessage: `A part can be at most ${MAX_PART_BYTES / MiB} MiB; split the file into smaller parts.` };
  router.post('/uploads/:upload_id/parts',
    // A part for an unknown or finished upload is refused before its bytes are written anywhere (Node discards
    // the unread body after the answer, so a client still sending gets the error, not a reset connection).
    async (req, _res, next) => {
      await pendingUploadOf(req, 'add parts to');
      next();
    },
    singleFileUpload(partBlobs, dataPart),
    (req, _res, next) => {
      // Before validation, which would call a text field `data` an unknown argument.
      if (!req.file) {
        const sentAsText = (req.body as Record<string, unknown> | undefined)?.data !== undefined;
        throw badRequest(sentAsText ? "'data' must be a file part of a multipart/form-data body, not a text field." : "Missing required parameter: 'data'.", 'data', sentAsText ? 'invalid_type' : 'missing_required_parameter');
      }
      next();
    },
    validate('addUploadPart'),
    async (req, res) => {
      const data = req.file!;
      // Checked again: the upload may have been cancelled, completed or expired while the part streamed in.
      const upload = await pendingUploadOf(req, 'add parts to');
      const received = (await uploads.parts(upload.id)).reduce((sum, p) => sum + p.bytes, 0);
      if (received + data.size > MAX_UPLOAD_BYTES) {
        throw badRequest(`Upload ${upload.id} already holds ${received} bytes of parts; this part would pass the ${MAX_UPLOAD_BYTES / MiB / 1024} GiB limit.`, 'data');
      }
      const part: UploadPartRow = { id: newId('part_'), upload_id: upload.id, bytes: data.size, created_at: nowSeconds() };
      await partBlobs.commit(data.path, part.id);
      if (!(await uploads.addPart(part))) {
        await partBlobs.remove(part.id);
        throw notPending(await uploadOf(req), 'add parts to');
      }
      res.json(toUploadPartObject(part));
    });

  router.post('/uploads/:upload_id/complete', validate('completeUpload'), async (req, res) => {
    const body = req.body as BodyOf<'completeUpload'>;
    const upload = await pendingUploadOf(req, 'complete');
    checkPartIds(upload, body.part_ids, await uploads.parts(upload.id));
    if (!(await uploads.beginCompletion(upload.id))) throw notPending(await uploadOf(req), 'complete');
    const tempPath = fileBlobs.tempPath();
    let file: FileRow;
    let removedParts: string[] = [];
    try {
      const md5 = await assemble(partBlobs.read, body.part_ids, tempPath);
      if (body.md5 !== undefined && body.md5.toLowerCase() !== md5) {
        throw badRequest(`The md5 of the assembled file is ${md5}, not the ${body.md5} given.`, 'md5', 'md5_mismatch');
      }
      file = await createFile(fileBlobs, {
        project: upload.project,
        tempPath,
        bytes: upload.bytes,
        filename: upload.filename,
        purpose: upload.purpose,
        expiresAfter: upload.file_expires_after,
        param: null,
      }, async (row) => { removedParts = await uploads.finishCompletion(upload.id, row); });
    } catch (err) {
      // The upload is as it was: the client may complete again (other parts, another order) or cancel.
      await uploads.abortCompletion(upload.id);
      await rm(tempPath, { force: true });
      throw err;
    }
    // A crash before these removals leaves stray part blobs, which start-up recovery removes.
    await Promise.all(removedParts.map((id) => partBlobs.remove(id)));
    res.json(toUploadObject({ ...upload, status: 'completed' }, file));
  });

  router.post('/uploads/:upload_id/cancel', validate('cancelUpload'), async (req, res) => {
    const upload = await pendingUploadOf(req, 'cancel');
    const removedParts = await uploads.cancel(upload.id);
    if (!removedParts) throw notPending(await uploadOf(req), 'cancel');
    await Promise.all(removedParts.map((id) => partBlobs.remove(id)));
    res.json(toUploadObject({ ...upload, status: 'cancelled' }));
  });

  return router;
}
