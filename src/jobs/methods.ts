// Which fine-tuning methods this build trains: the one place that says so (creation refuses the others with 400 unsupported_method).
export const TRAINABLE_METHODS: ReadonlySet<string> = new Set(['supervised', 'dpo']);
