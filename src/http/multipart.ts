// Multipart uploads: multer streams file parts into temp files (never into memory); the temp files are removed when the response ends.
import type { RequestHandler } from 'express';
import multer, { type StorageEngine } from 'multer';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { ApiError, badRequest } from './errors.ts';
import type { BlobStore } from '../store/store.ts';

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

/** Several named file parts, each given at most once. */
export interface FilePartsOptions extends Omit<FilePartOptions, 'field'> {
  fields: readonly string[];
}

/** multer's errors as the envelope, worded for the route's file fields. */
function toApiError(err: unknown, { fields, tooLargeMessage }: FilePartsOptions): unknown {
  if (!(err instanceof multer.MulterError)) return err;
  const only = fields.length === 1 ? `send exactly one file part named '${fields[0]}'` : `send one file part for each of ${fields.map((f) => `'${f}'`).join(', ')}`;
  if (err.code === 'LIMIT_FILE_SIZE') return new ApiError(413, tooLargeMessage, { param: err.field ?? fields[0], code: 'file_too_large' });
  if (err.code === 'LIMIT_FILE_COUNT') return badRequest(`Too many file parts: ${only}.`, fields[0]);
  if (err.code === 'LIMIT_UNEXPECTED_FILE') return badRequest(`Unexpected file part '${err.field}': ${only}.`, err.field ?? fields[0]);
  return badRequest(`Malformed multipart body: ${err.message}.`, err.field ?? null);
}

/** Parses with multer's `select` (one part or named parts), removes the temp files when the response ends, and words multer's errors. */
function uploadHandler(blobs: BlobStore, options: FilePartsOptions, select: (m: multer.Multer) => RequestHandler): RequestHandler {
  const parse = select(
    multer({
      storage: tempFileStorage(blobs),
      limits: { fileSize: options.maxBytes, files: options.fields.length, fields: 50, fieldSize: 64 * 1024, parts: 60 },
      // UTF-8 filenames (busboy would read them as latin1 otherwise).
      defParamCharset: 'utf8',
    }),
  );
  return (req, res, next) => {
    parse(req, res, (err?: unknown) => {
      // Committed uploads were renamed away; anything still here is a rejected upload.
      const files = req.file ? [req.file] : Object.values((req.files ?? {}) as Record<string, Express.Multer.File[]>).flat();
      for (const { path } of files) res.on('close', () => void rm(path, { force: true }));
      next(toApiError(err, options));
    });
  };
}

/**
 * Parses a multipart body with exactly one file part named `options.field` (in any position among the fields)
 * into `req.file` (a temp file) and `req.body` (the text fields). A second file part is a 400, a file
 * over `maxBytes` a 413; in both cases the partial temp file is already gone.
 */
export function singleFileUpload(blobs: BlobStore, options: FilePartOptions): RequestHandler {
  return uploadHandler(blobs, { ...options, fields: [options.field] }, (m) => m.single(options.field));
}

/** Like singleFileUpload for several file parts, each named in `options.fields` and given at most once: `req.files[name][0]`. */
export function namedFilesUpload(blobs: BlobStore, options: FilePartsOptions): RequestHandler {
  return uploadHandler(blobs, options, (m) => m.fields(options.fields.map((name) => ({ name, maxCount: 1 }))));
}
