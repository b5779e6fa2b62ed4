// /v1/files: upload (multipart, streamed to disk), list, retrieve, download and delete files.
import { Router } from 'express';
import { pipeline } from 'node:stream/promises';
import { readJsonl } from '../datasets/jsonl-reader.ts';
import type { AppContext } from './context.ts';
import { badRequest, noSuchObject } from './errors.ts';
import { singleFileUpload } from './multipart.ts';
import { validate, type BodyOf, type QueryOf } from './validation.ts';
import { newId, nowSeconds } from '../store/ids.ts';
import type { BlobStore, FileRow, FileStore } from '../store/store.ts';
import type { components } from './openapi-types.ts';

type FileObject = components['schemas']['OpenAIFile'];

/** The wire shape of a file row. */
export function toFileObject(row: FileRow): FileObject {
  return {
    id: row.id,
    object: 'file',
    bytes: row.bytes,
    created_at: row.created_at,
    expires_at: row.expires_at,
    filename: row.filename,
    purpose: row.purpose,
    status: row.status,
    status_details: row.status_details,
  };
}

/** The hosted API's refusal of a fine-tune file by name: only .jsonl is accepted. */
export function checkFineTuneFilename(filename: string, param: string | null): void {
  if (!filename.toLowerCase().endsWith('.jsonl')) {
    throw badRequest(`Invalid file format for Fine-Tuning API. Must be .jsonl (got '${filename}').`, param, 'invalid_file_format');
  }
}

/**
 * The structural check the hosted API does at upload for `fine-tune`: a .jsonl name and every non-blank line a JSON
 * object, read by the same reader and rules as training (UTF-8 BOM and CRLF accepted, a line-length limit). What
 * the objects must contain is checked when a job is created.
 */
async function checkFineTuneJsonl(path: string, filename: string, param: string | null): Promise<void> {
  checkFineTuneFilename(filename, param);
  for await (const line of readJsonl(path)) {
    if ('problem' in line) throw badRequest(`Invalid file format for Fine-Tuning API: line ${line.lineNumber}: ${line.message}.`, param, 'invalid_file_format');
  }
}

/** A finished temp file on its way to becoming a File. */
export interface NewFile {
  project: string;
  tempPath: string;
  bytes: number;
  filename: string;
  purpose: FileRow['purpose'];
  /** `expires_after.seconds`, counted from the File's creation. */
  expiresAfter: number | null;
  /** The request field content errors name (`file` for /v1/files). */
  param: string | null;
}

/**
 * How every uploaded File is made, from POST /v1/files and from a completed Upload alike: the purpose's
 * content checks, then the blob made durable, then `record` inserts the row (and may change more in the same
 * transaction). The blob is on disk before its row exists; if `record` throws, the blob is removed again.
 */
export async function createFile(blobs: BlobStore, file: NewFile, record: (row: FileRow) => Promise<void>): Promise<FileRow> {
  if (file.purpose === 'fine-tune') await checkFineTuneJsonl(file.tempPath, file.filename, file.param);
  const createdAt = nowSeconds();
  const row: FileRow = {
    id: newId('file-'),
    project: file.project,
    bytes: file.bytes,
    created_at: createdAt,
    expires_at: file.expiresAfter === null ? null : createdAt + file.expiresAfter,
    filename: file.filename,
    purpose: file.purpose,
    status: 'processed',
    status_details: null,
  };
  await blobs.commit(file.tempPath, row.id);
  try {
    await record(row);
  } catch (err) {
    await blobs.remove(row.id);
    throw err;
  }
  return row;
}

export function filesRouter(ctx: AppContext, files: FileStore = ctx.store.files, blobs: BlobStore = ctx.store.blobs): Router {
  const router = Router();

  const filePart = { field: 'file', maxBytes: ctx.config.maxUploadBytes, tooLargeMessage: 'File is too large for this server (see --max-upload-mb).' };
  router.post('/files', singleFileUpload(blobs, filePart), validate('createFile'), async (req, res) => {
    const body = req.body as BodyOf<'createFile'>;
    const upload = req.file;
    if (!upload) throw badRequest("Missing required parameter: 'file'.", 'file', 'missing_required_parameter');
    const row = await createFile(blobs, {
      project: req.project,
      tempPath: upload.path,
      bytes: upload.size,
      filename: upload.originalname,
      purpose: body.purpose,
      expiresAfter: body.expires_after?.seconds ?? null,
      param: 'file',
    }, (row) => files.insert(row));
    res.json(toFileObject(row));
  });

  router.get('/files', validate('listFiles'), async (req, res) => {
    const q = req.validQuery as QueryOf<'listFiles'>;
    const page = await files.list(req.project, { purpose: q.purpose, limit: q.limit ?? 10000, order: q.order ?? 'desc', after: q.after });
    if (!page) throw badRequest(`No such File object: ${q.after} (the 'after' cursor must be the id of a listed file).`, 'after');
    res.json({
      object: 'list',
      data: page.rows.map(toFileObject),
      first_id: page.rows[0]?.id ?? null,
      last_id: page.rows.at(-1)?.id ?? null,
      has_more: page.hasMore,
    });
  });

  router.get('/files/:file_id', validate('retrieveFile'), async (req, res) => {
    const row = await files.get(req.project, req.params.file_id as string);
    if (!row) throw noSuchObject('File', req.params.file_id as string);
    res.json(toFileObject(row));
  });

  router.get('/files/:file_id/content', validate('downloadFile'), async (req, res) => {
    const row = await files.get(req.project, req.params.file_id as string);
    if (!row) throw noSuchObject('File', req.params.file_id as string);
    res.setHeader('content-type', 'application/octet-stream');
    res.setHeader('content-length', String(row.bytes));
    try {
      await pipeline(blobs.read(row.id), res);
    } catch (err) {
      // A client that hangs up mid-download is not a server error.
      if ((err as NodeJS.ErrnoException).code !== 'ERR_STREAM_PREMATURE_CLOSE') throw err;
    }
  });

  router.delete('/files/:file_id', validate('deleteFile'), async (req, res) => {
    const id = req.params.file_id as string;
    if (!(await files.delete(req.project, id))) throw noSuchObject('File', id);
    // A crash between these two leaves a blob without a row, which start-up recovery removes.
    await blobs.remove(id);
    res.json({ id, object: 'file', deleted: true });
  });

  return router;
}
