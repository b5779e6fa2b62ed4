// Which fine-tuning methods this build trains: the one place that says so (creation refuses the others with 400 unsupported_method).
export const TRAINABLE_METHODS: ReadonlySet<string> = new Set(['supervised', 'dpo']);

/**
 * The learning rate a learning_rate_multiplier of 1 means for `method`, given the server's base rate (supervised).
 * DPO's gradients do not shrink as the loss falls (its margin keeps growing) and it starts from a tuned model, so it
 * takes a much lower rate: measured on the built-in model, the supervised rate wrecked the answers within a few steps
 * (README, "DPO defaults").
 */
export function methodLearningRate(method: 'supervised' | 'dpo', baseLearningRate: number): number {
  return method === 'dpo' ? baseLearningRate * DPO_LEARNING_RATE_SCALE : baseLearningRate;
}

/** DPO's base learning rate as a share of the supervised one. */
export const DPO_LEARNING_RATE_SCALE = 0.05;
