// Multipart uploads: multer streams the one file part into a temp file (never into memory); the temp file is removed when the response ends.
import type { RequestHandler } from 'express';
import multer, { type StorageEngine } from 'multer';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { ApiError, badRequest } from './errors.ts';
import type { BlobStore } from '../store/blobs.ts';

/** A multer storage engine writing each file part to a fresh temp path of the blob store. */
function tempFileStorage(blobs: BlobStore): StorageEngine {
  return {
    _handleFile(_req, file, cb) {
      const path = blobs.tempPath();
      let size = 0;
      file.stream.on('data', (chunk: Buffer) => { size += chunk.length; });
      pipeline(file.stream, createWriteStream(path)).then(
        () => cb(null, { path, size }),
        (err: Error) => { void rm(path, { force: true }); cb(err); },
      );
    },
    _removeFile(_req, file, cb) {
      rm(file.path, { force: true }).then(() => cb(null), cb);
    },
  };
}

export interface FilePartOptions {
  /** The name of the one file part (`file` for /v1/files, `data` for upload parts). */
  field: string;
  maxBytes: number;
  /** The 413 message for a part over `maxBytes`. */
  tooLargeMessage: string;
}

/** multer's errors as the envelope, worded for the route's file field. */
function toApiError(err: unknown, { field, tooLargeMessage }: FilePartOptions): unknown {
  if (!(err instanceof multer.MulterError)) return err;
  const only = `send exactly one file part named '${field}'`;
  if (err.code === 'LIMIT_FILE_SIZE') return new ApiError(413, tooLargeMessage, { param: field, code: 'file_too_large' });
  if (err.code === 'LIMIT_FILE_COUNT') return badRequest(`Too many file parts: ${only}.`, field);
  if (err.code === 'LIMIT_UNEXPECTED_FILE') return badRequest(`Unexpected file part '${err.field}': ${only}.`, err.field ?? field);
  return badRequest(`Malformed multipart body: ${err.message}.`, err.field ?? null);
}

/**
 * Parses a multipart body with exactly one file part named `options.field` (in any position among the fields)
 * into `req.file` (a temp file) and `req.body` (the text fields). A second file part is a 400, a file
 * over `maxBytes` a 413; in both cases the partial temp file is already gone.
 */
export function singleFileUpload(blobs: BlobStore, options: FilePartOptions): RequestHandler {
  const parse = multer({
    storage: tempFileStorage(blobs),
    limits: { fileSize: options.maxBytes, files: 1, fields: 50, fieldSize: 64 * 1024, parts: 60 },
    // UTF-8 filenames (busboy would read them as latin1 otherwise).
    defParamCharset: 'utf8',
  }).single(options.field);
  return (req, res, next) => {
    parse(req, res, (err?: unknown) => {
      if (req.file) {
        const path = req.file.path;
        // Committed uploads were renamed away; anything still here is a rejected upload.
        res.on('close', () => void rm(path, { force: true }));
      }
      next(toApiError(err, options));
    });
  };
}
