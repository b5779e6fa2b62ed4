// The error an export raises when the request or the model cannot be exported (a 400 for the API), as opposed to a failure.

export class ExportRefused extends Error {
  constructor(
    message: string,
    readonly param: 'format' | 'dtype' | 'model',
  ) {
    super(message);
  }
}
